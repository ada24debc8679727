package gpu

import (
	"fmt"
	"sync"
)

// allocator is a caching allocator of device memory keyed by size: a released buffer goes to the free list of its
// (rounded) size and the next request of that size takes it back, so that training steps, which ask for the same
// sizes every time, reuse memory instead of calling cuMemAlloc. The backend functions do the real allocation; they
// are plain cuMemAlloc/cuMemFree on the device and fakes in tests. Safe for concurrent use (buffers come back from
// GC cleanups on other goroutines).
type allocator struct {
	alloc   func(bytes int64) (uintptr, error)
	release func(ptr uintptr) error

	mu     sync.Mutex
	free   map[int64][]uintptr
	cached int64 // bytes held in free lists
	live   int64 // bytes handed out and not yet returned
}

func newAllocator(alloc func(int64) (uintptr, error), release func(uintptr) error) *allocator {
	return &allocator{alloc: alloc, release: release, free: map[int64][]uintptr{}}
}

// roundSize is the size class of a request: multiples of 512 bytes up to 1 MiB, then multiples of 1/8 of the
// power of two below the size (so at most 12.5% waste). Requests of the same size always share a class.
func roundSize(bytes int64) int64 {
	const small = 512
	if bytes <= 0 {
		return small
	}
	if bytes <= 1<<20 {
		return (bytes + small - 1) &^ (small - 1)
	}
	p := int64(1)
	for p*2 <= bytes {
		p *= 2
	}
	step := p / 8
	return (bytes + step - 1) / step * step
}

// get returns a buffer of at least bytes and its size class. When the backend is out of memory it frees every
// cached buffer and tries once more.
func (a *allocator) get(bytes int64) (uintptr, int64, error) {
	size := roundSize(bytes)
	a.mu.Lock()
	if l := a.free[size]; len(l) > 0 {
		p := l[len(l)-1]
		a.free[size] = l[:len(l)-1]
		a.cached -= size
		a.live += size
		a.mu.Unlock()
		return p, size, nil
	}
	a.mu.Unlock()
	p, err := a.alloc(size)
	if err != nil {
		if terr := a.trim(); terr != nil {
			return 0, 0, fmt.Errorf("gpu: allocating %d bytes: %w (and freeing the cache: %v)", size, err, terr)
		}
		if p, err = a.alloc(size); err != nil {
			return 0, 0, fmt.Errorf("gpu: allocating %d bytes: %w", size, err)
		}
	}
	a.mu.Lock()
	a.live += size
	a.mu.Unlock()
	return p, size, nil
}

// put returns a buffer of the given size class to its free list.
func (a *allocator) put(p uintptr, size int64) {
	a.mu.Lock()
	a.free[size] = append(a.free[size], p)
	a.cached += size
	a.live -= size
	a.mu.Unlock()
}

// trim frees every cached buffer.
func (a *allocator) trim() error {
	a.mu.Lock()
	free := a.free
	a.free = map[int64][]uintptr{}
	a.cached = 0
	a.mu.Unlock()
	var first error
	for _, l := range free {
		for _, p := range l {
			if err := a.release(p); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// stats returns the bytes in use and the bytes cached.
func (a *allocator) stats() (live, cached int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live, a.cached
}
