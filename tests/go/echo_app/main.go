// echo_app: a Go net/http app for the tunnel tests. Every request is answered 200 with
// "METHOD target|X-Forwarded-For|Host\n" (the raw request target as the server read it).
// It listens on 127.0.0.1:0 and prints its port on the first line of stdout.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s|%s|%s\n", r.Method, r.RequestURI, r.Header.Get("X-Forwarded-For"), r.Host)
	})
	if err := http.Serve(ln, handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
