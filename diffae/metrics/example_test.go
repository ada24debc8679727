package metrics_test

import (
	"fmt"

	"dae/diffae/metrics"
)

func ExampleAUROC() {
	scores := []float64{0.1, 0.4, 0.35, 0.8}
	labels := []bool{false, false, true, true}
	fmt.Println(metrics.AUROC(scores, labels))
	// Output: 0.75
}

func ExamplePSNR() {
	d := metrics.Dims{N: 1, C: 1, H: 1, W: 2}
	x := []float32{-1, 1}
	y := []float32{-0.5, 1} // off by 0.25 once the images are in [0,1]
	fmt.Printf("MSE %.5f, PSNR %.2f dB\n", metrics.MSE(x, y, d)[0], metrics.PSNR(x, y, d)[0])
	// Output: MSE 0.03125, PSNR 15.05 dB
}
