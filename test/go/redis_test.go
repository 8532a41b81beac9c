package retryqtest

// A tiny Redis client over net (RESP2), enough for the tests: LPUSH as a retryq.Pusher,
// and the few reads the assertions need. One connection, guarded by a mutex, so
// goroutines may share it.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"
)

type redisConn struct {
	mu sync.Mutex
	c  net.Conn
	r  *bufio.Reader
}

// dialRedis connects to redis://host:port (the harness's RETRYQ_TEST_REDIS_URL).
func dialRedis(rawURL string) (*redisConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "redis" || u.Host == "" {
		return nil, fmt.Errorf("redis URL %q: want redis://host:port", rawURL)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &redisConn{c: c, r: bufio.NewReader(c)}, nil
}

func (rc *redisConn) Close() error { return rc.c.Close() }

// redisError is an error reply (-ERR ...).
type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

// do sends one command and reads its reply: string, int64, nil, []interface{} or a
// redisError. The context's deadline (else 5 s) bounds the round trip.
func (rc *redisConn) do(ctx context.Context, args ...string) (interface{}, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	if err := rc.c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	buf := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		buf = append(buf, "$"+strconv.Itoa(len(a))+"\r\n"...)
		buf = append(buf, a...)
		buf = append(buf, "\r\n"...)
	}
	if _, err := rc.c.Write(buf); err != nil {
		return nil, err
	}
	reply, err := rc.read()
	if e, isErr := reply.(redisError); isErr && err == nil {
		return nil, e
	}
	return reply, err
}

func (rc *redisConn) read() (interface{}, error) {
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("redis: malformed reply line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return redisError(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, data); err != nil {
			return nil, err
		}
		return string(data[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		items := make([]interface{}, n)
		for i := range items {
			if items[i], err = rc.read(); err != nil {
				return nil, err
			}
		}
		return items, nil
	}
	return nil, fmt.Errorf("redis: unknown reply type %q", kind)
}

// LPush makes redisConn a retryq.Pusher.
func (rc *redisConn) LPush(ctx context.Context, key, value string) error {
	_, err := rc.do(ctx, "LPUSH", key, value)
	return err
}

// LPushMany makes redisConn a retryq.BatchPusher: one LPUSH of every value, in order.
func (rc *redisConn) LPushMany(ctx context.Context, key string, values []string) error {
	_, err := rc.do(ctx, append([]string{"LPUSH", key}, values...)...)
	return err
}

// lrange returns every element of a list.
func (rc *redisConn) lrange(ctx context.Context, key string) ([]string, error) {
	reply, err := rc.do(ctx, "LRANGE", key, "0", "-1")
	if err != nil {
		return nil, err
	}
	items, ok := reply.([]interface{})
	if !ok {
		return nil, fmt.Errorf("LRANGE %s: unexpected reply %v", key, reply)
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i], _ = it.(string)
	}
	return out, nil
}
