/* Big-endian integers in byte strings, as every Missive format writes them. */
#ifndef MSV_UTIL_ENDIAN_H
#define MSV_UTIL_ENDIAN_H

#include <stdint.h>

static inline void msv_put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t msv_get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void msv_put_u64be(uint8_t *p, uint64_t v)
{
    msv_put_u32be(p, (uint32_t)(v >> 32));
    msv_put_u32be(p + 4, (uint32_t)v);
}

static inline uint64_t msv_get_u64be(const uint8_t *p)
{
    return (uint64_t)msv_get_u32be(p) << 32 | msv_get_u32be(p + 4);
}

#endif
