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
