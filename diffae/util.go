package diffae

import "fmt"

func blockName(prefix string, i int) string { return fmt.Sprintf("%s.%d", prefix, i) }

func shapeStr(c *Config) string {
	return fmt.Sprintf("[N, %d, %d, %d]", c.InChannels, c.ImageSize, c.ImageSize)
}

func shapeN(n int) string { return fmt.Sprintf("[%d]", n) }

func shapeNE(n, e int) string { return fmt.Sprintf("[%d, %d]", n, e) }
