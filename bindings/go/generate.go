package kiln

// The raw layer (package kiln.dev/kiln/raw) is generated from bindings/kiln.i by SWIG.
//go:generate sh generate-raw.sh
