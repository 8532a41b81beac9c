/* The table of retryq's embedded SQL migrations (generated into migrations_data.c). */
#ifndef RETRYQ_LIB_MIGRATIONS_H
#define RETRYQ_LIB_MIGRATIONS_H

#include <stddef.h>
#include <stdint.h>

typedef struct migration_file {
    int64_t version;
    const char *name; /* e.g. "retry_worker" */
    int up;           /* 1: .up.sql, 0: .down.sql */
    const char *sql;
} migration_file_t;

extern const migration_file_t migration_files[];
extern const size_t migration_file_count;

#endif
