# Installs the already-built coproc (with coproc::mpi) into a private prefix,
# then configures, builds and runs tests/mpi/consumer against that install
# tree only, under mpirun -np 2 (MPIEXEC, MPIEXEC_FLAGS).
set(prefix ${BINARY}/prefix)
file(REMOVE_RECURSE ${BINARY}/build)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${TOP_BINARY} --prefix ${prefix}
  RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
foreach(f coproc-config.cmake coproc-mpi-targets.cmake)
  file(GLOB_RECURSE found ${prefix}/*/${f})
  if(NOT found)
    message(FATAL_ERROR "install tree has no ${f}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${CONSUMER} -B ${BINARY}/build -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consumer configure failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consumer build failed: ${rc}")
endif()
string(REPLACE " " ";" flags "${MPIEXEC_FLAGS}")
execute_process(COMMAND ${MPIEXEC} ${flags} ${BINARY}/build/mpi_consumer
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "${out}${err}")
if(rc OR NOT out MATCHES "mpi_consumer: 42 from 1 rank")
  message(FATAL_ERROR "consumer run failed: ${rc}")
endif()
