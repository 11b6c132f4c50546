"""What one GPU session runs (session.sh) and what reads its results afterwards."""
