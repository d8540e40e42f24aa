"""Views: self-contained HTML pages (inline images, no network) and notebook display."""
