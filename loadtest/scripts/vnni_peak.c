// One core's `vpdpbusd zmm` throughput, alone and beside the other instructions a
// quantized-matmul block issues: the ceiling of the batched (compute-bound) kernels,
// and which extra instructions take pipes from it (on AMD Zen 4 the float multiplies
// and FMAs do, the shifts, masks and conversions do not).
//
//   gcc -O3 -march=native loadtest/scripts/vnni_peak.c -o /tmp/vnni_peak && /tmp/vnni_peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define ITERS 20000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// 8 independent accumulators (enough to cover the instruction's latency), then EXTRA.
#define RUN(name, EXTRA)                                                     \
  do {                                                                       \
    double t = now();                                                        \
    for (long n = 0; n < ITERS; n++) {                                       \
      _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) a[i] =             \
          _mm512_dpbusd_epi32(a[i], x, y);                                   \
      EXTRA;                                                                 \
      __asm__ volatile("" : "+v"(x), "+v"(m), "+v"(f), "+v"(g), "+v"(h));       \
    }                                                                        \
    printf("%-26s %.2f G vpdpbusd/s\n", name, ITERS * 8 / (now() - t) / 1e9); \
  } while (0)

int main(void) {
  __m512i a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm512_set1_epi32(i);
  __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(5);
  __m512i m = _mm512_set1_epi32(7), s = _mm512_set1_epi32(1);
  // Each extra op is its own dependency chain, so only throughput is measured.
  __m512 f = _mm512_set1_ps(1), g = _mm512_set1_ps(2), h = _mm512_set1_ps(3);
  const __m512 c = _mm512_set1_ps(1.0001f);
  RUN("8 vpdpbusd", );
  RUN("8 vpdpbusd + 1 fma", f = _mm512_fmadd_ps(f, c, c));
  RUN("8 vpdpbusd + 3 fma/mul", f = _mm512_fmadd_ps(f, c, c); g = _mm512_fmadd_ps(g, c, c);
      h = _mm512_mul_ps(h, c));
  RUN("8 vpdpbusd + 1 vpmulld", s = _mm512_add_epi32(s, _mm512_mullo_epi32(m, a[0])));
  RUN("8 vpdpbusd + 1 cvt", f = _mm512_add_ps(f, _mm512_cvtepi32_ps(m)));
  RUN("8 vpdpbusd + 4 and/shift", m = _mm512_and_si512(_mm512_srli_epi16(m, 4), s);
      s = _mm512_and_si512(_mm512_srli_epi16(s, 4), m));
  __m512i r = a[0];
  for (int i = 1; i < 8; i++) r = _mm512_add_epi32(r, a[i]);
  // Printed so the compiler keeps the work.
  printf("(%d %d %f)\n", _mm512_reduce_add_epi32(r), _mm512_reduce_add_epi32(s),
         _mm512_reduce_add_ps(_mm512_add_ps(f, _mm512_add_ps(g, h))));
  return 0;
}
