# OpenMP for the clang fuzz build (GLMLAB_FUZZ). Clang's own runtime (libomp, Debian's libomp-14-dev)
# is used when its omp.h is there. Otherwise clang drives GCC's libgomp (-fopenmp=libgomp, same ABI as a
# gcc build) with a copy of GCC's omp.h from which the GCC-only attribute `__malloc__ (omp_free)` is
# removed (clang rejects it); the copy lives in the build folder.
execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-resource-dir OUTPUT_VARIABLE _glmlab_res
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(EXISTS "${_glmlab_res}/include/omp.h")
  find_package(OpenMP REQUIRED)
else()
  find_program(GLMLAB_GCC NAMES gcc gcc-12 REQUIRED)
  execute_process(COMMAND ${GLMLAB_GCC} -print-file-name=include/omp.h OUTPUT_VARIABLE _glmlab_gomp_h
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${GLMLAB_GCC} -print-file-name=libgomp.so OUTPUT_VARIABLE _glmlab_gomp_so
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT EXISTS "${_glmlab_gomp_h}" OR NOT EXISTS "${_glmlab_gomp_so}")
    message(FATAL_ERROR "GLMLAB_FUZZ: neither clang's omp.h (apt libomp-14-dev) nor GCC's libgomp was found")
  endif()
  file(READ "${_glmlab_gomp_h}" _glmlab_omp_text)
  string(REPLACE "__malloc__ (omp_free)," "" _glmlab_omp_text "${_glmlab_omp_text}")
  # Written through configure_file so that a reconfigure does not touch it (and rebuild its users).
  file(WRITE "${CMAKE_BINARY_DIR}/gomp-include/omp.h.in" "${_glmlab_omp_text}")
  configure_file("${CMAKE_BINARY_DIR}/gomp-include/omp.h.in" "${CMAKE_BINARY_DIR}/gomp-include/omp.h" COPYONLY)
  foreach(lang C CXX)
    add_library(OpenMP::OpenMP_${lang} INTERFACE IMPORTED)
    target_compile_options(OpenMP::OpenMP_${lang} INTERFACE -fopenmp=libgomp)
    target_include_directories(OpenMP::OpenMP_${lang} SYSTEM INTERFACE "${CMAKE_BINARY_DIR}/gomp-include")
    target_link_libraries(OpenMP::OpenMP_${lang} INTERFACE "${_glmlab_gomp_so}")
  endforeach()
  message(STATUS "glmlab fuzz: no libomp for clang; OpenMP through GCC's libgomp (${_glmlab_gomp_so})")
endif()
