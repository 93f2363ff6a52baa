// Package web holds the internal app's browser UI: one index.html, one
// app.js and one style.css, plain files with no build step and nothing
// loaded from elsewhere, embedded in the binary.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.js style.css
var files embed.FS

// FS returns the UI's files with index.html at the root, ready for
// http.FileServerFS.
func FS() fs.FS { return files }
