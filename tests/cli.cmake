# End-to-end tests of the klcal tool (label cpu): tests/cli/cli_e2e.py generates inputs with
# NumPy, runs the built binary and checks the table, cache, JSON, CSV, curves, error messages,
# and agreement with python_ref/calibrate.py. Exit code 77 = skipped (numpy/matplotlib missing).
if(TARGET klcal_cli)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    foreach(case calibrate methods python_ref demo bad_inputs degenerate inspect plot)
      add_test(NAME cli_${case}
               COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_e2e.py
                       --klcal $<TARGET_FILE:klcal_cli> ${case})
      set_tests_properties(cli_${case} PROPERTIES LABELS cpu SKIP_RETURN_CODE 77 TIMEOUT 900)
    endforeach()
    # Saved histograms (tests/cli/state_e2e.py): calibrate == search == merge of halves, byte
    # for byte; per-tensor failures; inspect of state files; check --json over every method;
    # the progress line on a pseudo-terminal.
    foreach(case roundtrip failures inspect_state check_methods progress)
      add_test(NAME cli_state_${case}
               COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/cli/state_e2e.py
                       --klcal $<TARGET_FILE:klcal_cli> ${case})
      set_tests_properties(cli_state_${case} PROPERTIES LABELS cpu SKIP_RETURN_CODE 77 TIMEOUT 600)
    endforeach()
    # GPU collection == CPU collection, byte for byte; skipped (77) without a usable device.
    add_test(NAME cli_state_gpu
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/cli/state_e2e.py
                     --klcal $<TARGET_FILE:klcal_cli> gpu)
    set_tests_properties(cli_state_gpu PROPERTIES LABELS gpu SKIP_RETURN_CODE 77 TIMEOUT 600)
  else()
    message(STATUS "klcal: python3 not found, CLI end-to-end tests not registered")
  endif()
endif()
