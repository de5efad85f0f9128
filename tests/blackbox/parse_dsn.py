"""Reads a Maildir entry holding a delivery status notification with Python's `email` and
prints what a mail client would see of it: the top content type and report type, then one
`recipient <Final-Recipient> <Action> <Status>` line per recipient block, then the returned
header's size and Message-ID."""

import email
import sys

with open(sys.argv[1], "rb") as f:
    msg = email.message_from_binary_file(f)
print("type", msg.get_content_type(), msg.get_param("report-type"))
for part in msg.walk():
    if part.get_content_type() == "message/delivery-status":
        # The first block is per message, the others per recipient (RFC 3464 §2.1).
        for block in part.get_payload()[1:]:
            print("recipient", block["Final-Recipient"], block["Action"], block["Status"])
    if part.get_content_type() == "text/rfc822-headers":
        returned = email.message_from_string(part.get_payload())
        print("headers", len(part.get_payload()), returned["Message-ID"])
