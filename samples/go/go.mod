module kiln.dev/samples

go 1.19

require kiln.dev/kiln v0.0.0

// The binding is used from this checkout; nothing is downloaded.
replace kiln.dev/kiln => ../../bindings/go
