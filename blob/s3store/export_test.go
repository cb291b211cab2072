package s3store

// SetCopyLimits lowers the sizes above which Put copies with UploadPartCopy, and the
// part size, so a test can take that path with small blobs. It returns a restore func.
func SetCopyLimits(limit, part int64) (restore func()) {
	oldLimit, oldPart := copyLimit, copyPartSize
	copyLimit, copyPartSize = limit, part
	return func() { copyLimit, copyPartSize = oldLimit, oldPart }
}
