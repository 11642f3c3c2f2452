// Command extract checks a Go module zip against its go.sum hash (the "h1:" hash the go
// command computes, golang.org/x/mod/sumdb/dirhash.Hash1) and copies the files matching
// the given patterns out of it. Standard library only; run by fetch.sh with `go run`.
//
//	go run extract.go ZIP H1 MODULE@VERSION DEST PATTERN...
//
// PATTERN is a path.Match pattern relative to the module root; a leading "!" excludes.
// Every including pattern must match at least one file, so a file that moved upstream
// fails here instead of leaving a CRD set silently incomplete.
package main

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) < 6 {
		fail("usage: extract ZIP H1 MODULE@VERSION DEST PATTERN...")
	}
	zipPath, want, prefix, dest, patterns := os.Args[1], os.Args[2], os.Args[3]+"/", os.Args[4], os.Args[5:]

	z, err := zip.OpenReader(zipPath)
	check(err)
	defer z.Close()
	files := map[string]*zip.File{}
	var names []string
	for _, f := range z.File {
		if _, dup := files[f.Name]; dup {
			fail("duplicate entry %q in %s", f.Name, zipPath)
		}
		files[f.Name] = f
		names = append(names, f.Name)
	}

	// dirhash.Hash1: sha256 over "<sha256 hex>  <name>\n" for every file, names sorted.
	sort.Strings(names)
	summary := sha256.New()
	for _, name := range names {
		if strings.Contains(name, "\n") {
			fail("file name with a newline in %s", zipPath)
		}
		h := sha256.New()
		copyFile(h, files[name])
		fmt.Fprintf(summary, "%x  %s\n", h.Sum(nil), name)
	}
	if got := "h1:" + base64.StdEncoding.EncodeToString(summary.Sum(nil)); got != want {
		fail("%s: checksum mismatch: got %s, pinned %s", zipPath, got, want)
	}

	matched := map[string]int{}
	extracted := 0
	for _, name := range names {
		rel, ok := strings.CutPrefix(name, prefix)
		if !ok {
			fail("%s: entry %q is outside %s", zipPath, name, prefix)
		}
		if rel != path.Clean(rel) || strings.HasPrefix(rel, "../") || path.IsAbs(rel) {
			fail("%s: unsafe entry %q", zipPath, name)
		}
		if !wanted(rel, patterns, matched) {
			continue
		}
		out := filepath.Join(dest, filepath.FromSlash(rel))
		check(os.MkdirAll(filepath.Dir(out), 0o755))
		w, err := os.Create(out)
		check(err)
		copyFile(w, files[name])
		check(w.Close())
		extracted++
	}
	for _, p := range patterns {
		if !strings.HasPrefix(p, "!") && matched[p] == 0 {
			fail("%s: pattern %q matches no file", prefix, p)
		}
	}
	fmt.Fprintf(os.Stderr, "extract: %s: checksum ok, %d files\n", strings.TrimSuffix(prefix, "/"), extracted)
}

func wanted(rel string, patterns []string, matched map[string]int) bool {
	var hit string
	for _, p := range patterns {
		if ex, ok := strings.CutPrefix(p, "!"); ok {
			if m, err := path.Match(ex, rel); err != nil {
				fail("bad pattern %q: %v", p, err)
			} else if m {
				return false
			}
		} else if m, err := path.Match(p, rel); err != nil {
			fail("bad pattern %q: %v", p, err)
		} else if m && hit == "" {
			hit = p
		}
	}
	if hit != "" {
		matched[hit]++
	}
	return hit != ""
}

func copyFile(w io.Writer, f *zip.File) {
	r, err := f.Open()
	check(err)
	_, err = io.Copy(w, r)
	check(err)
	check(r.Close())
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "extract: "+format+"\n", args...)
	os.Exit(1)
}
