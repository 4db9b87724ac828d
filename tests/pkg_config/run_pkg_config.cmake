# Installs the already-built coproc into a private prefix, then builds SOURCE with
# `CXX SOURCE $(pkg-config --cflags --libs PACKAGE)` only, and runs it (under RUNNER when
# given, e.g. mpirun). Arguments: -DTOP_BINARY= -DBINARY= -DCXX= -DPACKAGE= -DSOURCE=
# [-DRUNNER=] (a ;-list).
set(prefix ${BINARY}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${TOP_BINARY} --prefix ${prefix}
  OUTPUT_QUIET RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
file(GLOB_RECURSE pc_files ${prefix}/*/${PACKAGE}.pc)
if(NOT pc_files)
  message(FATAL_ERROR "${PACKAGE}.pc was not installed under ${prefix}")
endif()
list(GET pc_files 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
set(program ${BINARY}/${PACKAGE}_program)
set(command "${CXX} ${SOURCE} -o ${program} $(pkg-config --cflags --libs ${PACKAGE})")
message(STATUS "${command}")
execute_process(COMMAND sh -c "${command}" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the build with pkg-config's flags alone failed: ${rc}")
endif()
execute_process(COMMAND ${RUNNER} ${program} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the program failed: ${rc}")
endif()
