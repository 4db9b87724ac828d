// A shared library whose function a test submits to a pool: under
// start_method::spawn its code has no known address in the workers' image.

extern "C" int coproc_test_plugin_twice(int x) {
  return 2 * x;
}
