//! Black-box tests of the smtp-edge binary.
