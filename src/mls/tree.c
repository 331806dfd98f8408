/*
 * Tree math of RFC 9420 Appendix C over the array representation of a
 * left-balanced binary tree: leaves at even indices, intermediate nodes at
 * odd ones, the level of a node the number of trailing one bits of its index.
 */
#include "mls/mls.h"

uint32_t msv_mls_tree_width(uint32_t n_leaves)
{
    return n_leaves == 0 ? 0 : 2 * (n_leaves - 1) + 1;
}

static uint32_t log2_floor(uint32_t x)
{
    uint32_t k = 0;

    while (x >> (k + 1) > 0)
        k++;
    return k;
}

uint32_t msv_mls_tree_root(uint32_t n_leaves)
{
    uint32_t w = msv_mls_tree_width(n_leaves);

    return w == 0 ? MSV_MLS_NONE : (UINT32_C(1) << log2_floor(w)) - 1;
}

uint32_t msv_mls_tree_level(uint32_t x)
{
    uint32_t k = 0;

    while (k < 32 && ((x >> k) & 1) == 1)
        k++;
    return k;
}

uint32_t msv_mls_tree_left(uint32_t x)
{
    uint32_t k = msv_mls_tree_level(x);

    if (k == 0 || k >= 32)
        return MSV_MLS_NONE;
    return x ^ (UINT32_C(1) << (k - 1));
}

uint32_t msv_mls_tree_right(uint32_t x)
{
    uint32_t k = msv_mls_tree_level(x);

    if (k == 0 || k >= 32)
        return MSV_MLS_NONE;
    return x ^ (UINT32_C(3) << (k - 1));
}

uint32_t msv_mls_tree_parent(uint32_t x, uint32_t n_leaves)
{
    uint32_t k = msv_mls_tree_level(x), b;

    if (x == msv_mls_tree_root(n_leaves) || x >= msv_mls_tree_width(n_leaves) || k >= 30)
        return MSV_MLS_NONE;
    b = (x >> (k + 1)) & 1;
    return (x | (UINT32_C(1) << k)) ^ (b << (k + 1));
}

uint32_t msv_mls_tree_sibling(uint32_t x, uint32_t n_leaves)
{
    uint32_t p = msv_mls_tree_parent(x, n_leaves);

    if (p == MSV_MLS_NONE)
        return MSV_MLS_NONE;
    return x < p ? msv_mls_tree_right(p) : msv_mls_tree_left(p);
}
