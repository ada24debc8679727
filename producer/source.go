package producer

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"dae/store"

	"github.com/minio/minio-go/v7"
)

// MaxFileBytes is the largest source file read; a larger one is recorded as invalid without being read whole.
const MaxFileBytes = 64 << 20

// Item is one file of a source.
type Item struct {
	Name string // where it came from: a path, an archive member or an s3:// URL
	Data []byte // nil when TooBig
	// TooBig says the file is over MaxFileBytes: its data is not kept, only its Size and (streamed) Hash.
	TooBig bool
	Size   int64
	Hash   string // SHA-256 hex of a TooBig file's content, streamed
	// Err says the file could not be read (Data is nil): it is unreadable, corrupt or truncated, or it went away
	// after it was listed. The producer records it as a failed job with this reason; the walk goes on.
	Err error
}

// fatal reports whether a read error is not the file's own fault but the process's or the run's (cancelled, out
// of file descriptors or memory): it stops the walk instead of failing the file for good.
func fatal(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM)
}

// objectGone reports whether an S3 read error says the object itself is missing (deleted after it was listed).
// Any other error (the network, the service, credentials) may pass: it stops the walk, so that a good object is
// not failed for good.
func objectGone(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && resp.Code == "NoSuchKey"
}

// hashStream fills a TooBig item's hash from r.
func hashStream(r io.Reader, it *Item) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	it.Hash = hex.EncodeToString(h.Sum(nil))
	return nil
}

// isImageName says whether a file name has an image extension; other files (labels.csv, README) are ignored.
func isImageName(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".png", ".jpg", ".jpeg", ".gif":
		return true
	}
	return false
}

// Walk calls fn with every image file of source, in a stable order: a folder (walked recursively, in name order),
// a .tar, .tar.gz, .tgz or .zip archive, or an S3 prefix s3://bucket/prefix read through st. Files without an image
// extension are counted in ignored and not passed on; hidden files and folders are skipped.
//
// A file that cannot be read is passed on with Err set, and the walk goes on; Walk returns an error only when the
// source itself cannot be read on (a folder or archive that cannot be opened, a tar stream that cannot be
// advanced past a damaged member, an S3 listing or read that fails for another reason than a missing object),
// when the run is cancelled, or when fn returns one.
func Walk(ctx context.Context, st *store.Store, source string, fn func(Item) error) (ignored int, err error) {
	visit := func(it Item) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if it.Err == nil && !isImageName(it.Name) {
			ignored++
			return nil
		}
		return fn(it)
	}
	switch {
	case strings.HasPrefix(source, "s3://"):
		return ignored, walkS3(ctx, st, source, visit)
	}
	info, err := os.Stat(source)
	if err != nil {
		return 0, fmt.Errorf("source: %w", err)
	}
	if info.IsDir() {
		return ignored, walkDir(source, visit)
	}
	lower := strings.ToLower(source)
	switch {
	case strings.HasSuffix(lower, ".zip"):
		return ignored, walkZip(source, visit)
	case strings.HasSuffix(lower, ".tar"), strings.HasSuffix(lower, ".tar.gz"), strings.HasSuffix(lower, ".tgz"):
		return ignored, walkTar(source, visit)
	}
	return 0, fmt.Errorf("source %s: not a folder, a .tar, .tar.gz, .tgz or .zip archive, or an s3:// prefix", source)
}

func hidden(name string) bool { return strings.HasPrefix(name, ".") && name != "." && name != ".." }

// hiddenPath reports whether any element of an archive member's path is hidden.
func hiddenPath(name string) bool {
	for _, el := range strings.Split(name, "/") {
		if hidden(el) {
			return true
		}
	}
	return false
}

func walkDir(root string, visit func(Item) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root || fatal(err) {
				return fmt.Errorf("source %s: %w", root, err)
			}
			// A sub-folder that cannot be listed: its files are out of reach, say so in its place.
			return visit(Item{Name: p, Err: fmt.Errorf("folder cannot be read: %w", err)})
		}
		if p != root && hidden(d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if !isImageName(p) {
			return visit(Item{Name: p})
		}
		it := Item{Name: p}
		if err := readFile(p, &it); err != nil {
			if fatal(err) {
				return fmt.Errorf("source %s: %w", p, err)
			}
			it.Data, it.Err = nil, err
		}
		return visit(it)
	})
}

// readFile reads an image file of a folder into it (or only hashes it, when it is over MaxFileBytes).
func readFile(p string, it *Item) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	it.Size = info.Size()
	return readMember(f, it)
}

func readMember(r io.Reader, it *Item) error {
	if it.Size > MaxFileBytes {
		it.TooBig = true
		return hashStream(r, it)
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return err
	}
	it.Data = data
	return nil
}

func walkTar(file string, visit func(Item) error) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if lower := strings.ToLower(file); strings.HasSuffix(lower, ".gz") || strings.HasSuffix(lower, ".tgz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("source %s: %w", file, err)
		}
		defer gz.Close()
		r = gz
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("source %s: %w", file, err)
		}
		if h.Typeflag != tar.TypeReg || hiddenPath(h.Name) {
			continue
		}
		it := Item{Name: file + ":" + h.Name, Size: h.Size}
		if isImageName(h.Name) {
			if err := readMember(tr, &it); err != nil {
				if fatal(err) {
					return fmt.Errorf("source %s: %w", it.Name, err)
				}
				// The member is damaged (truncated, or its compressed stream is): it fails on its own. A tar
				// reader cannot go on past such an error, so the next call to Next ends the walk with it.
				it.Data, it.Err = nil, err
			}
		}
		if err := visit(it); err != nil {
			return err
		}
	}
}

func walkZip(file string, visit func(Item) error) error {
	zr, err := zip.OpenReader(file)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer zr.Close()
	files := append([]*zip.File(nil), zr.File...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, zf := range files {
		if zf.FileInfo().IsDir() || hiddenPath(zf.Name) {
			continue
		}
		it := Item{Name: file + ":" + zf.Name, Size: int64(zf.UncompressedSize64)}
		if isImageName(zf.Name) {
			// A damaged member (a bad checksum, a broken compressed stream, an unknown method) fails on its own:
			// zip members are read independently, so the others are still within reach.
			if err := readZipMember(zf, &it); err != nil {
				if fatal(err) {
					return fmt.Errorf("source %s: %w", it.Name, err)
				}
				it.Data, it.Err = nil, err
			}
		}
		if err := visit(it); err != nil {
			return err
		}
	}
	return nil
}

func readZipMember(zf *zip.File, it *Item) error {
	rc, err := zf.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return readMember(rc, it)
}

func walkS3(ctx context.Context, st *store.Store, source string, visit func(Item) error) error {
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(source, "s3://"), "/")
	if bucket == "" {
		return fmt.Errorf("source %s: no bucket (want s3://bucket/prefix)", source)
	}
	if st == nil {
		return fmt.Errorf("source %s: no store to read it through", source)
	}
	return st.ListSource(ctx, bucket, prefix, func(o store.SourceObject) error {
		it := Item{Name: "s3://" + bucket + "/" + o.Key, Size: o.Size}
		if isImageName(o.Key) {
			if err := readObject(ctx, st, bucket, o.Key, &it); err != nil {
				if !objectGone(err) {
					return fmt.Errorf("source %s: %w", it.Name, err)
				}
				it.Data, it.Err = nil, err
			}
		}
		return visit(it)
	})
}

// readObject reads an image object of an S3 source into it (or only hashes it, when it is over MaxFileBytes).
func readObject(ctx context.Context, st *store.Store, bucket, key string, it *Item) error {
	if it.Size > MaxFileBytes {
		it.TooBig = true
		r, err := st.OpenSourceObject(ctx, bucket, key)
		if err != nil {
			return err
		}
		defer r.Close()
		return hashStream(r, it)
	}
	data, err := st.GetSourceObject(ctx, bucket, key)
	if err != nil {
		return err
	}
	it.Data = data
	return nil
}
