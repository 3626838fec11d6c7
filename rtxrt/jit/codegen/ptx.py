"""PTX helpers shared by the tensor-core generators (GEMM, implicit-GEMM convolution,
attention), as CUDA C++ source text: shared-memory addressing and ldmatrix, and cp.async
copies (with the plain-load fallback before sm_80). Every generator pastes the same text, so
a fix here reaches all of them."""

SHARED_AND_LDMATRIX = r"""__device__ __forceinline__ unsigned rtx_smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}

__device__ __forceinline__ void rtx_ldmatrix_x4(unsigned* r, unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void rtx_ldmatrix_x4_trans(unsigned* r, unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

"""

CP_ASYNC = r"""// 16 bytes from global (src, when valid) to shared (dst), zeros otherwise.
__device__ __forceinline__ void rtx_copy16(unsigned short* dst, const unsigned short* src, bool valid) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(rtx_smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
#else
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (valid) v = *reinterpret_cast<const uint4*>(src);
  *reinterpret_cast<uint4*>(dst) = v;
#endif
}

__device__ __forceinline__ void rtx_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

template <int PENDING> __device__ __forceinline__ void rtx_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" :: "n"(PENDING) : "memory");
#endif
}

"""
