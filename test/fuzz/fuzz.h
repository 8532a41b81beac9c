/*
 * Shared by the libFuzzer targets in test/fuzz: the entry point's prototype (the build
 * uses -Wmissing-prototypes) and an assertion that stays on in every build type and
 * aborts, so libFuzzer records the input as a crash.
 */
#ifndef RETRYQ_FUZZ_H
#define RETRYQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_ASSERT(cond)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif
