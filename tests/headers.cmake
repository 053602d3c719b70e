# Every public header compiles on its own with the host C++ compiler alone (no CUDA include path).
file(GLOB KLCAL_PUBLIC_HEADERS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/klcal/*.hpp
     ${PROJECT_SOURCE_DIR}/reference/include/klcal/*.hpp)
foreach(h ${KLCAL_PUBLIC_HEADERS})
  get_filename_component(hname ${h} NAME_WE)
  add_test(NAME public_header_plain_cxx_${hname}
           COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -Wall -Wextra -Wpedantic -Werror
                   -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR}/reference/include
                   -include ${h} -x c++ /dev/null)
  set_tests_properties(public_header_plain_cxx_${hname} PROPERTIES LABELS cpu)
endforeach()
