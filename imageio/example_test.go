package imageio_test

import (
	"fmt"
	"image"
	"image/color"

	"dae/imageio"
)

func ExampleToCHW() {
	// A 2×2 image already at the model's size is converted without
	// resampling: black is -1, white is 1, planar C×H×W.
	img := image.NewNRGBA(image.Rect(0, 0, 2, 2))
	img.Set(0, 0, color.White)
	img.Set(1, 0, color.NRGBA{255, 0, 0, 255})
	img.Set(0, 1, color.Black)
	img.Set(1, 1, color.NRGBA{0, 0, 255, 255})
	x := imageio.ToCHW(img, 2, 3, nil)
	fmt.Println("R:", x[0:4])
	fmt.Println("G:", x[4:8])
	fmt.Println("B:", x[8:12])
	back := imageio.FromCHW(x, 3, 2, 2)
	fmt.Println(back.At(1, 0))
	// Output:
	// R: [1 1 -1 -1]
	// G: [1 -1 -1 -1]
	// B: [1 -1 -1 1]
	// {255 0 0 255}
}
