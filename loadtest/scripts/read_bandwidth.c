// The machine's memory read bandwidth, the ceiling of a bandwidth-bound decode: T
// threads each stream their share of a 1 GiB buffer (transparent huge pages asked
// for, as the page cache maps weight files large) with AVX-512 loads, 5 passes.
//
//   gcc -O2 -mavx512f -pthread loadtest/scripts/read_bandwidth.c -o /tmp/read_bandwidth
//   /tmp/read_bandwidth 2        # threads
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define N (1ULL << 30)
static char *buf;
static int threads;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *arg) {
  long id = (long)arg;
  size_t per = N / threads;
  const char *p = buf + id * per;
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (size_t i = 0; i < per; i += 256) {
    a = _mm512_xor_si512(a, _mm512_load_si512(p + i));
    b = _mm512_xor_si512(b, _mm512_load_si512(p + i + 64));
    c = _mm512_xor_si512(c, _mm512_load_si512(p + i + 128));
    d = _mm512_xor_si512(d, _mm512_load_si512(p + i + 192));
  }
  long long r[8];
  _mm512_storeu_si512(r, _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
  return (void *)(r[0] & 1);  // keeps the loads
}

int main(int argc, char **argv) {
  threads = argc > 1 ? atoi(argv[1]) : 1;
  buf = aligned_alloc(1 << 21, N);
  madvise(buf, N, MADV_HUGEPAGE);
  memset(buf, 1, N);
  for (int pass = 0; pass < 5; pass++) {
    pthread_t th[64];
    double t0 = now();
    for (long i = 0; i < threads; i++) pthread_create(&th[i], 0, run, (void *)i);
    for (int i = 0; i < threads; i++) pthread_join(th[i], 0);
    printf("%d threads: %.1f GB/s\n", threads, N / (now() - t0) / 1e9);
  }
  return 0;
}
