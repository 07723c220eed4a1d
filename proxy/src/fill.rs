//! One upstream download per blob, shared by every waiting client. (With the local registry.)
