# Dependencies, all from Debian's packages. Asio is standalone and header-only.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing>=2.3)
find_path(ASIO_INCLUDE_DIR asio.hpp REQUIRED)
find_package(cereal REQUIRED)

if(NOT TARGET coproc_asio)
  add_library(coproc_asio INTERFACE)
  target_include_directories(coproc_asio SYSTEM INTERFACE ${ASIO_INCLUDE_DIR})
  # clang 14 does not advertise coroutine support to Asio 1.22 by itself.
  target_compile_definitions(coproc_asio INTERFACE
    $<$<CXX_COMPILER_ID:Clang>:ASIO_HAS_CO_AWAIT=1>)
  target_link_libraries(coproc_asio INTERFACE Threads::Threads)
endif()
