package collector

import bolt "go.etcd.io/bbolt"

// Drop10m deletes the 10-minute rollups of every collection of the
// embedded database at path, as a database written before they existed
// lacks them.
func Drop10m(path string) error {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, c *bolt.Bucket) error {
			if c.Bucket(levelBuckets[level10m]) == nil {
				return nil
			}
			return c.DeleteBucket(levelBuckets[level10m])
		})
	})
}
