module dae

go 1.26.8
