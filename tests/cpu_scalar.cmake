# The CPU backend tests once more with KLCAL_CPU_ISA=scalar: the portable (non-AVX2) code paths
# must give the same histograms and searches within tolerance on any machine.
foreach(_klcal_t cpu_backend_test cpu_search_property_test)
  if(TARGET ${_klcal_t})
    add_test(NAME ${_klcal_t}_scalar COMMAND ${_klcal_t})
    set_tests_properties(${_klcal_t}_scalar PROPERTIES LABELS cpu ENVIRONMENT KLCAL_CPU_ISA=scalar
                         WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endif()
endforeach()
