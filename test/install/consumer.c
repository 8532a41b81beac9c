/* A separate C program built against an installed libretryq (find_package or pkg-config). */
#include <stdio.h>
#include <string.h>

#include <retryq/retryq.h>

int main(void)
{
    retryq_job_t job;
    retryq_error_t err;
    char buf[1024];
    if (retryq_job_init(&job, 42, "us-east", 0, 1, &err) != RETRYQ_OK)
        return 1;
    if (retryq_job_encode(&job, buf, sizeof buf) < 0)
        return 1;
    printf("%s %s\n", retryq_version(), strstr(buf, "\"execution_id\":42") ? "ok" : "bad");
    return 0;
}
