package gpu

import "testing"

func TestElemGrid(t *testing.T) {
	for _, tc := range []struct{ n, blocks int }{
		{0, 1}, {1, 1}, {256, 1}, {257, 2}, {1 << 20, 4096}, {1 << 30, maxElemGrid},
	} {
		b, th := elemGrid(tc.n)
		if b != tc.blocks || th != elemThreads {
			t.Errorf("elemGrid(%d) = %d×%d, want %d×%d", tc.n, b, th, tc.blocks, elemThreads)
		}
		if tc.n > 0 && b*th < min(tc.n, maxElemGrid*elemThreads) {
			t.Errorf("elemGrid(%d): %d threads cover too little for one pass", tc.n, b*th)
		}
	}
}

func TestRowThreads(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 32}, {1, 32}, {32, 32}, {33, 64}, {200, 224}, {256, 256}, {4096, 256},
	} {
		got := rowThreads(tc.n)
		if got != tc.want {
			t.Errorf("rowThreads(%d) = %d, want %d", tc.n, got, tc.want)
		}
		if got%32 != 0 || got > 1024 {
			t.Errorf("rowThreads(%d) = %d: not a whole number of warps within a block", tc.n, got)
		}
	}
}

func TestRowGrid(t *testing.T) {
	if _, err := rowGrid(0); err == nil {
		t.Error("rowGrid(0) should fail")
	}
	if g, err := rowGrid(5); err != nil || g != 5 {
		t.Errorf("rowGrid(5) = %d, %v", g, err)
	}
}

func TestPartGrid(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{1, 1}, {256, 1}, {257, 2}, {1 << 30, partBlocks}} {
		if got := partGrid(tc.n); got != tc.want {
			t.Errorf("partGrid(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestGemmGrid(t *testing.T) {
	for _, tc := range []struct{ m, n, batch, gx, gy, gz, launches int }{
		{1, 1, 1, 1, 1, 1, 1},
		{16, 17, 3, 2, 1, 3, 1},
		{33, 16, 70000, 1, 3, maxGridYZ, 2},
	} {
		gx, gy, gz, l := gemmGrid(tc.m, tc.n, tc.batch)
		if gx != tc.gx || gy != tc.gy || gz != tc.gz || l != tc.launches {
			t.Errorf("gemmGrid(%d,%d,%d) = %d,%d,%d,%d; want %d,%d,%d,%d", tc.m, tc.n, tc.batch, gx, gy, gz, l,
				tc.gx, tc.gy, tc.gz, tc.launches)
		}
	}
}
