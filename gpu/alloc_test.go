package gpu

import (
	"errors"
	"testing"
)

func TestRoundSize(t *testing.T) {
	for _, tc := range []struct{ in, want int64 }{
		{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {1 << 20, 1 << 20},
		{1<<20 + 1, 1<<20 + 1<<17}, {3 << 20, 3 << 20}, {3<<20 + 1, 3<<20 + 1<<18},
	} {
		got := roundSize(tc.in)
		if got != tc.want {
			t.Errorf("roundSize(%d) = %d, want %d", tc.in, got, tc.want)
		}
		if got < tc.in || (tc.in > 1<<20 && float64(got) > 1.125*float64(tc.in)) {
			t.Errorf("roundSize(%d) = %d: too small or wastes over 12.5%%", tc.in, got)
		}
	}
}

// fakeMemory is a device memory of fixed capacity for the allocator's tests.
type fakeMemory struct {
	cap, used int64
	next      uintptr
	sizes     map[uintptr]int64
	allocs    int
}

func (f *fakeMemory) alloc(b int64) (uintptr, error) {
	if f.used+b > f.cap {
		return 0, errors.New("out of memory")
	}
	f.used += b
	f.next += 1 << 32
	f.sizes[f.next] = b
	f.allocs++
	return f.next, nil
}

func (f *fakeMemory) release(p uintptr) error {
	b, ok := f.sizes[p]
	if !ok {
		return errors.New("double free")
	}
	delete(f.sizes, p)
	f.used -= b
	return nil
}

func TestAllocatorReusesBySize(t *testing.T) {
	f := &fakeMemory{cap: 1 << 30, sizes: map[uintptr]int64{}}
	a := newAllocator(f.alloc, f.release)
	p1, s1, err := a.get(1000)
	if err != nil {
		t.Fatal(err)
	}
	a.put(p1, s1)
	p2, _, _ := a.get(1020) // same class
	if p2 != p1 {
		t.Errorf("a request of the same size class got new memory")
	}
	p3, _, _ := a.get(5000) // another class
	if p3 == p1 {
		t.Errorf("two live buffers share an address")
	}
	if f.allocs != 2 {
		t.Errorf("%d backend allocations, want 2", f.allocs)
	}
	live, cached := a.stats()
	if live != 1024+5120 || cached != 0 {
		t.Errorf("stats = %d live, %d cached", live, cached)
	}
}

// When the device is full, the cache is emptied and the request retried.
func TestAllocatorTrimsWhenFull(t *testing.T) {
	f := &fakeMemory{cap: 4096, sizes: map[uintptr]int64{}}
	a := newAllocator(f.alloc, f.release)
	var held []uintptr
	for range 8 {
		p, s, err := a.get(512)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
		_ = s
	}
	for _, p := range held {
		a.put(p, 512)
	}
	if _, _, err := a.get(2048); err != nil {
		t.Fatalf("cached buffers were not freed to make room: %v", err)
	}
	if _, cached := a.stats(); cached != 0 {
		t.Errorf("%d bytes still cached after a trim", cached)
	}
	if _, _, err := a.get(4096); err == nil {
		t.Error("a request beyond the capacity succeeded")
	}
}
