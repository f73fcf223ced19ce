// The standard library packages prime.sh compiles into the shared build cache: the
// wrapper's own and those jobs commonly import. A job importing others compiles them
// in its own build (its private cache), at the cost of a slower first build.
package main

import (
	_ "bufio"
	_ "bytes"
	_ "context"
	_ "crypto/md5"
	_ "crypto/rand"
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "database/sql/driver"
	_ "encoding/base64"
	_ "encoding/binary"
	_ "encoding/csv"
	_ "encoding/hex"
	_ "encoding/json"
	_ "errors"
	_ "fmt"
	_ "io"
	_ "math"
	_ "math/big"
	_ "math/rand"
	_ "net/url"
	_ "os"
	_ "os/exec"
	_ "path/filepath"
	_ "reflect"
	_ "regexp"
	_ "runtime"
	_ "runtime/debug"
	_ "slices"
	_ "sort"
	_ "strconv"
	_ "strings"
	_ "sync"
	_ "syscall"
	_ "time"
	_ "unicode/utf8"
	_ "unsafe"
)

func main() {}
