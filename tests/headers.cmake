# Every public header compiles on its own with the host C++ compiler alone (no CUDA include path).
# In a build without CUDA the GPU headers must stop with a clear compile error instead.
file(GLOB KLCAL_PUBLIC_HEADERS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/klcal/*.hpp
     ${PROJECT_SOURCE_DIR}/reference/include/klcal/*.hpp)
# The engine headers (mpi, nccl) compile with their engine's include directories alone.
set(KLCAL_GPU_HEADERS histogram threshold calibrator)
foreach(h ${KLCAL_PUBLIC_HEADERS} ${PROJECT_BINARY_DIR}/include/klcal/config.hpp)
  get_filename_component(hname ${h} NAME_WE)
  set(tname public_header_plain_cxx_${hname})
  set(engine_includes "")
  if(hname STREQUAL "mpi")
    if(NOT KLCAL_WITH_MPI)
      continue()
    endif()
    list(TRANSFORM MPI_CXX_INCLUDE_DIRS PREPEND "-I" OUTPUT_VARIABLE engine_includes)
    # What MPI::MPI_CXX gives its users, e.g. OMPI_SKIP_MPICXX (the C API only).
    list(TRANSFORM MPI_CXX_COMPILE_DEFINITIONS PREPEND "-D" OUTPUT_VARIABLE mpi_defines)
    list(APPEND engine_includes ${mpi_defines})
  elseif(hname STREQUAL "nccl")
    if(NOT KLCAL_WITH_NCCL)
      continue()
    endif()
    set(engine_includes -I${NCCL_INCLUDE_DIR})
    foreach(d ${CUDAToolkit_INCLUDE_DIRS})
      list(APPEND engine_includes -I${d})
    endforeach()
  endif()
  add_test(NAME ${tname}
           COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -Wall -Wextra -Wpedantic -Werror
                   -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_BINARY_DIR}/include
                   -I${PROJECT_SOURCE_DIR}/reference/include ${engine_includes} -include ${h}
                   -x c++ /dev/null)
  set_tests_properties(${tname} PROPERTIES LABELS cpu)
  if(NOT KLCAL_ENABLE_CUDA AND hname IN_LIST KLCAL_GPU_HEADERS)
    set_tests_properties(${tname} PROPERTIES WILL_FAIL TRUE)
    add_test(NAME ${tname}_message
             COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -I${PROJECT_SOURCE_DIR}/include
                     -I${PROJECT_BINARY_DIR}/include -include ${h} -x c++ /dev/null)
    set_tests_properties(${tname}_message PROPERTIES LABELS cpu
                         PASS_REGULAR_EXPRESSION "klcal was built without CUDA")
  endif()
endforeach()
