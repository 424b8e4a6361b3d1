package store

// KeyIDByName returns the id of the live key using name (compared the way
// names are kept unique: trimmed, case-insensitive). The TUI form uses it
// to flag a taken name inline, before the admin reaches the save button.
func (s *Store) KeyIDByName(name string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.names[foldName(name)]
	return id, ok
}
