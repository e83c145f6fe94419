// h2cserver: a Go net/http server speaking HTTP/1.1 and h2c (prior knowledge and Upgrade,
// through golang.org/x/net/http2/h2c), for Sidelight's end-to-end tests.
//
// Usage: h2cserver 127.0.0.1:PORT
// Routes: /ok → 200 "ok", /missing → 404, /fail → 500, /big?n=N → 200 with N bytes,
// /hang → never answers (the handler blocks until the client goes away).
package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: h2cserver ADDR")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "missing", http.StatusNotFound) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "fail", http.StatusInternalServerError) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("content-length", strconv.Itoa(n))
		_, _ = w.Write(bytes.Repeat([]byte{'x'}, n))
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := &http.Server{Addr: os.Args[1], Handler: h2c.NewHandler(mux, &http2.Server{})}
	fmt.Println("listening", os.Args[1])
	log.Fatal(srv.ListenAndServe())
}
