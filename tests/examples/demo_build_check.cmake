# `./x demo` builds only what the demo needs. Checks (1) that x's demo command builds the
# primes_demo target alone, and (2) that building primes_demo compiles nothing from tests/,
# bench/ or fuzz/ (ninja -t commands lists every command the target needs).
# Arguments: -DX= (the x script) -DNINJA= -DBINARY= (the build directory).
file(READ ${X} script)
string(REGEX MATCH "\n  demo\\)\n[^;]*;;" demo_case "${script}")
if(NOT demo_case MATCHES "--target primes_demo")
  message(FATAL_ERROR "x demo does not build the primes_demo target alone:\n${demo_case}")
endif()
if(demo_case MATCHES "build build\n")
  message(FATAL_ERROR "x demo still builds every target:\n${demo_case}")
endif()
execute_process(COMMAND ${NINJA} -C ${BINARY} -t commands primes_demo
  OUTPUT_VARIABLE commands RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "ninja -t commands primes_demo failed: ${rc}")
endif()
string(REGEX MATCHALL "[^\n]*(/tests/|/bench/|/fuzz/)[^\n]*" extra "${commands}")
if(extra)
  message(FATAL_ERROR "primes_demo depends on test or benchmark code:\n${extra}")
endif()
string(REGEX MATCHALL "\n" lines "${commands}")
list(LENGTH lines n)
message(STATUS "x demo: ${n} build commands, none from tests/, bench/ or fuzz/")
