"""Fleet: cleaning, trips, mileage, utilisation, geofences and alerts, their jobs and CLI."""
