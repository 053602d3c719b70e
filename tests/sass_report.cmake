# Static sm_90 machine-code limits of the kernels (label cpu: no GPU needed): scripts/sass-report.sh
# on this build's klcal_cuda objects. Registered only when the CUDA kernels are built for sm_90
# and cuobjdump + nvdisasm are found (PATH, the toolkit, or the nvidia-cuda-cuobjdump /
# nvidia-cuda-nvdisasm wheels).
if(KLCAL_ENABLE_CUDA AND TARGET klcal_cuda)
  set(_klcal_sass_script ${PROJECT_SOURCE_DIR}/scripts/sass-report.sh)
  execute_process(COMMAND ${_klcal_sass_script} --find-tools RESULT_VARIABLE _klcal_sass_rc
                  OUTPUT_QUIET ERROR_QUIET)
  if(NOT "90" IN_LIST CMAKE_CUDA_ARCHITECTURES AND NOT "90-real" IN_LIST CMAKE_CUDA_ARCHITECTURES)
    message(STATUS "klcal: CUDA architectures do not include 90, sass_report test not registered")
  elseif(NOT _klcal_sass_rc EQUAL 0)
    message(STATUS "klcal: cuobjdump/nvdisasm not found (pip install nvidia-cuda-cuobjdump "
                   "nvidia-cuda-nvdisasm), sass_report test not registered")
  else()
    add_test(NAME sass_report
             COMMAND ${_klcal_sass_script} ${PROJECT_BINARY_DIR})
    set_tests_properties(sass_report PROPERTIES LABELS cpu TIMEOUT 300)
  endif()
endif()
