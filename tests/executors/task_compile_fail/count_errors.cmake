# Compiles mistakes.cpp for one COPROC_CASE and checks the compiler's answer:
# EXPECT empty: no error at all; else exactly one error, and it carries EXPECT
# (coproc's static_assert message). Arguments: -DCXX= -DSOURCE= -DCASE=
# -DEXPECT= -DFLAGS= (a ;-list of include and define flags).
execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only -DCOPROC_CASE=${CASE} ${FLAGS} ${SOURCE}
  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
# A message may hold ';', which would split the CMake list of matches.
string(REPLACE ";" "," text "${out}${err}")
string(REGEX MATCHALL "[^\n]*error:[^\n]*" errors "${text}")
list(LENGTH errors count)
if(EXPECT STREQUAL "")
  if(NOT status EQUAL 0 OR count GREATER 0)
    message(FATAL_ERROR "case ${CASE} should compile, got ${count} errors:\n${err}")
  endif()
  message(STATUS "case ${CASE}: compiles")
  return()
endif()
if(count EQUAL 0)
  message(FATAL_ERROR "case ${CASE} compiled; expected the error \"${EXPECT}\"")
endif()
list(GET errors 0 first)
string(FIND "${first}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "case ${CASE}: the first error is not \"${EXPECT}\":\n${err}")
endif()
if(NOT count EQUAL 1)
  message(FATAL_ERROR "case ${CASE}: ${count} errors, expected one:\n${err}")
endif()
message(STATUS "case ${CASE}: one error: ${first}")
