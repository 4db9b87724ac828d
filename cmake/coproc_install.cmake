include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS coproc coproc_asio EXPORT coproc-targets)
install(EXPORT coproc-targets NAMESPACE coproc::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/coproc)
configure_package_config_file(cmake/coproc-config.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/coproc-config.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/coproc)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/coproc-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/coproc-config.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/coproc-config-version.cmake
  cmake/coproc_deps.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/coproc)

# pkg-config files beside the CMake package (lib/pkgconfig next to lib/cmake),
# relocatable: the prefix is found from the .pc file's own directory.
file(RELATIVE_PATH COPROC_PC_PREFIX_FROM_PCDIR
  /root/${CMAKE_INSTALL_LIBDIR}/pkgconfig /root)
string(REGEX REPLACE "/$" "" COPROC_PC_PREFIX_FROM_PCDIR "${COPROC_PC_PREFIX_FROM_PCDIR}")
set(COPROC_PC_EXTRA_CFLAGS "")
foreach(dir IN ITEMS ${ASIO_INCLUDE_DIR} ${cereal_INCLUDE_DIRS})
  if(NOT dir STREQUAL "/usr/include" AND NOT dir STREQUAL "")
    string(APPEND COPROC_PC_EXTRA_CFLAGS " -I${dir}")
  endif()
endforeach()
configure_file(cmake/coproc.pc.in ${CMAKE_CURRENT_BINARY_DIR}/coproc.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/coproc.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET coproc_mpi)
  set(COPROC_PC_MPI_LIBS "")
  foreach(lib IN LISTS MPI_CXX_LIBRARIES)
    string(APPEND COPROC_PC_MPI_LIBS " ${lib}")
  endforeach()
  string(APPEND COPROC_PC_MPI_LIBS " ${CMAKE_DL_LIBS}")
  list(JOIN CMAKE_DL_LIBS " -l" dl_libs)
  if(CMAKE_DL_LIBS)
    string(REPLACE " ${CMAKE_DL_LIBS}" " -l${dl_libs}" COPROC_PC_MPI_LIBS "${COPROC_PC_MPI_LIBS}")
  endif()
  string(STRIP "${COPROC_PC_MPI_LIBS}" COPROC_PC_MPI_LIBS)
  configure_file(cmake/coproc-mpi.pc.in ${CMAKE_CURRENT_BINARY_DIR}/coproc-mpi.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/coproc-mpi.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
