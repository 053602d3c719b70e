// Declares cudaStream_t exactly as the CUDA runtime does, so the GPU API headers compile with g++
// alone.
#pragma once

// Identical to the CUDA runtime's own declaration; repeating a typedef of the same type is legal.
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;  // NOLINT(modernize-use-using)
