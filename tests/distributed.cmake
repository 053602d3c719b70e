# Distributed all-reduce tests: klcal::mpi under mpirun with 4 processes (label cpu), and
# klcal::nccl on one GPU (label gpu; skips without a device).
if(KLCAL_WITH_MPI)
  add_executable(mpi_all_reduce_test mpi_all_reduce_test.cpp)
  target_link_libraries(mpi_all_reduce_test PRIVATE klcal_mpi klcal::reference GTest::gtest)
  target_compile_options(mpi_all_reduce_test PRIVATE ${KLCAL_WARNINGS})
  # Open MPI refuses more processes than cores and running as root unless told (CI runs as root
  # on 2 cores); MPICH needs neither flag.
  set(_klcal_mpi_flags "")
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _klcal_mpiexec_version
                  ERROR_QUIET)
  if(_klcal_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(_klcal_mpi_flags --oversubscribe)
  endif()
  add_test(NAME mpi_all_reduce_np4
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 4 ${_klcal_mpi_flags}
                   ${MPIEXEC_PREFLAGS} $<TARGET_FILE:mpi_all_reduce_test> ${MPIEXEC_POSTFLAGS})
  set_tests_properties(mpi_all_reduce_np4 PROPERTIES LABELS cpu TIMEOUT 300 ENVIRONMENT
    "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
endif()

if(KLCAL_WITH_NCCL)
  add_executable(nccl_all_reduce_test nccl_all_reduce_test.cpp)
  target_link_libraries(nccl_all_reduce_test PRIVATE klcal_nccl klcal_test_support)
  target_compile_options(nccl_all_reduce_test PRIVATE ${KLCAL_WARNINGS})
  gtest_discover_tests(nccl_all_reduce_test PROPERTIES LABELS gpu DISCOVERY_TIMEOUT 60)
  add_dependencies(klcal_gpu_tests nccl_all_reduce_test)
endif()
