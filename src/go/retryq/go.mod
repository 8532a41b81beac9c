module retryq.dev/retryq

go 1.19
