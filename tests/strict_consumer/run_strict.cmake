# Configures, builds and runs tests/strict_consumer with one compiler.
# Arguments: -DSOURCE= (coproc's source tree) -DCONSUMER= -DBINARY= -DGENERATOR= -DCXX=
# [-DLAUNCHER=] (a compiler launcher such as ccache).
set(launcher_arg)
if(LAUNCHER)
  set(launcher_arg -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${CONSUMER} -B ${BINARY} -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=${CXX} -DCOPROC_SOURCE=${SOURCE}
  ${launcher_arg} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "strict consumer configure failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} -j 2 RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "strict consumer build failed (a warning in a public header?): ${rc}")
endif()
execute_process(COMMAND ${BINARY}/strict_consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "strict consumer run failed: ${rc}")
endif()
