# Target-scoped settings shared by every target this project builds.
function(coproc_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
    $<$<CXX_COMPILER_ID:GNU>:-Wno-interference-size>
    $<$<BOOL:${COPROC_WERROR}>:-Werror>)
endfunction()

# coproc_module(NAME DEPS...): a library target coproc::NAME from
# NAME/include and NAME/src/*.cpp.
function(coproc_module name)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  # A module with no compiled sources yet is header-only.
  if(srcs)
    add_library(coproc_${name} ${srcs})
    set(scope PUBLIC)
    coproc_set_warnings(coproc_${name})
    set_target_properties(coproc_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  else()
    add_library(coproc_${name} INTERFACE)
    set(scope INTERFACE)
  endif()
  add_library(coproc::${name} ALIAS coproc_${name})
  set_target_properties(coproc_${name} PROPERTIES EXPORT_NAME ${name})
  target_compile_features(coproc_${name} ${scope} cxx_std_20)
  target_include_directories(coproc_${name} ${scope}
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(coproc_${name} ${scope} ${ARGN})
  install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(TARGETS coproc_${name} EXPORT coproc-targets)
endfunction()
