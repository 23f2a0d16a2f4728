/* CRC32C (Castagnoli, reflected, as the crc32c package computes it) with
 * SSE4.2's crc32 instruction, one lane: the loop both C extensions use
 * (crypto/_rows.c for the trailer of an opened row, wire/_batch.c for a
 * row's trailer and a batch's check). Each keeps its own way of running
 * several lanes side by side around it; this is the one home of the lane.
 *
 * GANNET_HW_CRC is 1 where the compiler can target the instruction; the
 * caller still asks the CPU (__builtin_cpu_supports("sse4.2")) before
 * calling. `crc` is the running value (0xFFFFFFFF to start); the result is
 * not inverted, so a caller can go on from it.
 */
#ifndef GANNET_CRC32C_H
#define GANNET_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GANNET_HW_CRC 1

__attribute__((target("sse4.2"))) static inline uint32_t
crc32c_lane(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#else
#define GANNET_HW_CRC 0
#endif

#endif
