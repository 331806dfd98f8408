/*
 * The monitor's lineage of the key directory (src/client/lineage.c; docs/transparency.md, "The
 * monitor's lineage"): the checks of one LogRead answer, apart from the device's state, so that
 * they can be run on any bytes (fuzz/fuzz_lineage.c).
 */
#ifndef MSV_CLIENT_LINEAGE_H
#define MSV_CLIENT_LINEAGE_H

#include <stddef.h>
#include <stdint.h>

#include "missive/kt.h"
#include "missive/ptree.h"
#include "wire/frame.h"

/* roots kept for checking; when full the smallest sizes stay, the rest are counted and told */
#define SEEN_MAX 64

/* The roots lookups showed this device that the lineage has not reached yet, by size. */
struct msv_kt_seen_roots {
    uint32_t dropped;
    size_t n;
    struct {
        uint64_t size;
        uint8_t root[MSV_PT_HASH_LEN];
        int64_t at;
    } e[SEEN_MAX];
};

/*
 * One LogEntries answer to a read from log size from, whose head (already checked as every
 * answer's: key, signature, growth) is head, against the key directory's root at from: the root
 * signed for the head by the answer's log key, every entry proven at its index in head, their
 * append-only steps growing root (each version-4 leaf exactly what its step adds), ending at the
 * signed root if they reach the head, and building every root of seen (may be NULL) at the size
 * it was shown for; after the log's cut-over (at index cutover, -1 if none is known) every entry a
 * rotation or a version-4 leaf given whole, and no other cut-over entry. Returns 1 and sets root to
 * the tree after the answer's entries, or 0 with why said and root unchanged. Reads nothing but its
 * arguments.
 */
int msv_kt_lineage_page(const Msv__Wire__LogEntries *r, const struct msv_kt_head *head,
                        uint64_t from, uint8_t root[MSV_PT_HASH_LEN], int64_t cutover,
                        const struct msv_kt_seen_roots *seen, char *why, size_t why_len);

#endif
