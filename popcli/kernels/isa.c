/* Which of the kernel builds this CPU (and its operating system) can run: 0 generic x86-64 or
 * another architecture, 1 AVX2 + FMA, 2 AVX-512 F/BW/DQ/VL. Compiled into every build; the
 * generic build answers before a wider one is built or loaded (popcli/kernels/__init__.py).
 * __builtin_cpu_supports checks CPUID and, through XGETBV, that the OS saves the wide registers. */
int popcli_isa_level(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

/* The vector width in bytes the loops of this build were written for (train.c's VBYTES). */
int popcli_vector_bytes(void)
{
#if defined(__AVX512F__)
    return 64;
#elif defined(__AVX2__)
    return 32;
#else
    return 16;
#endif
}
