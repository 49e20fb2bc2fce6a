// yamux_peer: the real hashicorp/yamux (Debian's golang-github-hashicorp-yamux-dev) as a
// test and benchmark peer for warren's lib/mux. Built in GOPATH mode by the tests.
//
// Modes (addresses are host:port; "listen" modes print "listening ADDR" first):
//
//	server ADDR              accept sessions; per stream the first line says what to do:
//	                         "echo\n"   copy back until EOF, then Close
//	                         "sink\n"   read to EOF, reply with the hex SHA-256, then Close
//	                         "source N SEED\n"  write N pattern bytes, then Close
//	client-send ADDR N K     open K streams, send N raw pattern bytes each, Close;
//	                         prints "sent I SHA" per stream
//	client-echo ADDR N K     open K streams, write N bytes while reading N back; prints
//	                         "echo I SENT_SHA RECV_SHA"
//	client-recv ADDR N       open a stream, send "N\n", read to EOF; prints "recv BYTES SHA"
//	                         "discard N\n"  read N bytes, reply "N\n", then Close
//	client-bench ADDR N K    open K streams, each "discard N/K\n" + N/K bytes, wait for the
//	                         replies; prints "bench MBPS" (no half-close needed: the 2019
//	                         yamux cannot read after its own Close)
//	bench N K                Go client -> Go server in one process over loopback TCP, K
//	                         streams, N bytes in total; prints "bench MBPS"
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

func config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = ioutil.Discard
	return c
}

// pattern returns a deterministic pseudo-random block for a seed.
func pattern(seed int64) []byte {
	b := make([]byte, 1<<20)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func writeN(w io.Writer, n int64, seed int64) (string, error) {
	h := sha256.New()
	b := pattern(seed)
	for n > 0 {
		k := int64(len(b))
		if n < k {
			k = n
		}
		if _, err := w.Write(b[:k]); err != nil {
			return "", err
		}
		h.Write(b[:k])
		n -= k
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func serveStream(s *yamux.Stream) {
	defer s.Close()
	br := bufio.NewReader(s)
	line, err := br.ReadString('\n')
	if err != nil {
		log.Printf("stream %d: no command: %v", s.StreamID(), err)
		return
	}
	f := strings.Fields(line)
	switch f[0] {
	case "echo":
		io.Copy(s, br)
	case "sink":
		h := sha256.New()
		n, _ := io.Copy(h, br)
		fmt.Fprintf(s, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	case "discard":
		n, _ := strconv.ParseInt(f[1], 10, 64)
		got, _ := io.CopyN(ioutil.Discard, br, n)
		fmt.Fprintf(s, "%d\n", got)
	case "source":
		n, _ := strconv.ParseInt(f[1], 10, 64)
		seed, _ := strconv.ParseInt(f[2], 10, 64)
		writeN(s, n, seed)
	}
}

func server(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			sess, err := yamux.Server(c, config())
			if err != nil {
				log.Print(err)
				return
			}
			for {
				s, err := sess.AcceptStream()
				if err != nil {
					return
				}
				go serveStream(s)
			}
		}()
	}
}

func dialSession(addr string) *yamux.Session {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	sess, err := yamux.Client(c, config())
	if err != nil {
		log.Fatal(err)
	}
	return sess
}

func parallel(k int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f(i)
		}(i)
	}
	wg.Wait()
}

var outMu sync.Mutex

func out(format string, a ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", a...)
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: yamux_peer MODE ...")
	}
	arg := func(i int) int64 {
		v, err := strconv.ParseInt(os.Args[i], 10, 64)
		if err != nil {
			log.Fatalf("bad number %q", os.Args[i])
		}
		return v
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2])
	case "client-send":
		sess := dialSession(os.Args[2])
		n, k := arg(3), int(arg(4))
		parallel(k, func(i int) {
			s, err := sess.OpenStream()
			if err != nil {
				log.Fatal(err)
			}
			sum, err := writeN(s, n, int64(i))
			if err != nil {
				log.Fatal(err)
			}
			s.Close()
			out("sent %d %s", i, sum)
		})
		time.Sleep(100 * time.Millisecond) // let the last FINs leave before the session closes
		sess.Close()
	case "client-echo":
		sess := dialSession(os.Args[2])
		n, k := arg(3), int(arg(4))
		parallel(k, func(i int) {
			s, err := sess.OpenStream()
			if err != nil {
				log.Fatal(err)
			}
			var sent string
			done := make(chan struct{})
			go func() {
				sent, err = writeN(s, n, int64(i))
				if err != nil {
					log.Fatal(err)
				}
				close(done)
			}()
			h := sha256.New()
			got, err := io.CopyN(h, s, n)
			if err != nil {
				log.Fatalf("stream %d: read %d: %v", i, got, err)
			}
			<-done
			s.Close()
			out("echo %d %s %s", i, sent, hex.EncodeToString(h.Sum(nil)))
		})
		time.Sleep(100 * time.Millisecond)
		sess.Close()
	case "client-recv":
		sess := dialSession(os.Args[2])
		s, err := sess.OpenStream()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Fprintf(s, "%d\n", arg(3))
		h := sha256.New()
		got, err := io.Copy(h, s)
		if err != nil {
			log.Fatal(err)
		}
		s.Close()
		out("recv %d %s", got, hex.EncodeToString(h.Sum(nil)))
		time.Sleep(100 * time.Millisecond)
		sess.Close()
	case "bench":
		bench(arg(2), int(arg(3)))
	case "client-bench":
		sess := dialSession(os.Args[2])
		total, k := arg(3), int(arg(4))
		block := pattern(1)
		start := time.Now()
		parallel(k, func(i int) {
			s, err := sess.OpenStream()
			if err != nil {
				log.Fatal(err)
			}
			n := total / int64(k)
			fmt.Fprintf(s, "discard %d\n", n)
			for left := n; left > 0; left -= int64(len(block)) {
				b := block
				if left < int64(len(b)) {
					b = b[:left]
				}
				if _, err := s.Write(b); err != nil {
					log.Fatal(err)
				}
			}
			reply, err := bufio.NewReader(s).ReadString('\n')
			if err != nil || strings.TrimSpace(reply) != strconv.FormatInt(n, 10) {
				log.Fatalf("bad reply %q: %v", reply, err)
			}
			s.Close()
		})
		fmt.Printf("bench %.0f\n", float64(total)/1e6/time.Since(start).Seconds())
		sess.Close()
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func bench(total int64, k int) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{}, k)
	go func() {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		sess, _ := yamux.Server(c, config())
		for {
			s, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				io.Copy(ioutil.Discard, s)
				s.Close()
				done <- struct{}{}
			}()
		}
	}()
	sess := dialSession(l.Addr().String())
	block := pattern(1)
	start := time.Now()
	parallel(k, func(i int) {
		s, err := sess.OpenStream()
		if err != nil {
			log.Fatal(err)
		}
		for left := total / int64(k); left > 0; left -= int64(len(block)) {
			b := block
			if left < int64(len(b)) {
				b = b[:left]
			}
			if _, err := s.Write(b); err != nil {
				log.Fatal(err)
			}
		}
		s.Close()
	})
	for i := 0; i < k; i++ {
		<-done // every stream read to EOF by the server
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("bench %.0f\n", float64(total)/1e6/secs)
	sess.Close()
}
