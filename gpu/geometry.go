package gpu

import "fmt"

// Launch geometry. Element-wise kernels loop grid-stride, so their grid is capped; reducing kernels run one block
// per row with a block size fitted to the row.
const (
	elemThreads = 256     // threads per block of element-wise kernels
	maxElemGrid = 1 << 16 // blocks of an element-wise launch at most (each thread then loops)
	maxRowBlock = 256     // threads per block of a row reduction at most
	maxGridX    = 1<<31 - 1
	maxGridYZ   = 65535
	partBlocks  = 1024 // blocks of a reduction to a scalar at most (its partials are added on the host)
	gemmTile    = 16   // must match TILE in kernels.cu
)

// elemGrid returns the blocks and threads for an element-wise kernel over n items (at least one block).
func elemGrid(n int) (blocks, threads int) {
	blocks = (n + elemThreads - 1) / elemThreads
	return min(max(blocks, 1), maxElemGrid), elemThreads
}

// rowThreads returns the block size for a kernel that reduces rows of n items with one block per row: a multiple
// of 32 (the kernels reduce by warps), no larger than the row needs, at most maxRowBlock.
func rowThreads(n int) int {
	t := (n + 31) &^ 31
	return min(max(t, 32), maxRowBlock)
}

// rowGrid checks that rows blocks fit in one launch.
func rowGrid(rows int) (int, error) {
	if rows < 1 || rows > maxGridX {
		return 0, fmt.Errorf("gpu: %d rows do not fit a grid (1..%d)", rows, maxGridX)
	}
	return rows, nil
}

// partGrid returns the blocks of a reduction to a scalar over n items: each block writes one partial sum.
func partGrid(n int) int {
	return min(max((n+elemThreads-1)/elemThreads, 1), partBlocks)
}

// gemmGrid returns the grid of the fallback GEMM kernel for one launch of up to maxGridYZ products, and how many
// launches the batch needs.
func gemmGrid(m, n, batch int) (gx, gy, gz, launches int) {
	gx = (n + gemmTile - 1) / gemmTile
	gy = (m + gemmTile - 1) / gemmTile
	gz = min(batch, maxGridYZ)
	launches = (batch + maxGridYZ - 1) / maxGridYZ
	return gx, gy, gz, launches
}
