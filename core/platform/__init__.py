"""What every part stands on: settings, clients, the Table Storage layer, the HTTP transport, logs and traces."""
